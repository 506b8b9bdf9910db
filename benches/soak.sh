#!/usr/bin/env bash
# The endurance soak (issue 16): a release Lumen in front of lumen-sim, with API-key limits on
# a real redis-server, under 1M mixed requests (streams, errors, client hang-ups, engine faults
# and retries, limits), Lumen's RSS and open descriptors sampled every second before, during
# and after the load. Not run by CI at this length (tests/run.sh runs 60 s of the same).
#
#   ./benches/soak.sh                            # 1M requests at 700 req/s (~24 min + 2 min idle/after)
#   ./benches/soak.sh --requests 200000 --rate 1000
#
# Arguments go to `lumen-bench soak` (see `lumen-bench soak --help`). Writes the raw samples
# and summary under target/soak/, and benches/results/soak-<date>.{md,csv,png}: the summary,
# the samples downsampled to one row per 5 s (the maximum of each), and the plot.
# Needs redis-server and gnuplot (installed with apt-get when missing and run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
work="$target/soak"
mkdir -p "$work" benches/results

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "soak.sh: missing ${need[*]} (install them, or run as root with apt-get)" >&2
    exit 2
  fi
fi

echo "== building release binaries"
nice -n 10 cargo build --release --locked -q -p lumen -p lumen-sim-bin -p lumen-bench

date="$(date -u +%Y-%m-%d)"
base="benches/results/soak-$date"
status=0
# The machine is shared: everything runs niced (the rate is what keeps the run comparable).
nice -n 10 "$target/release/lumen-bench" soak --requests 1000000 --rate 700 \
  --csv "$work/samples.csv" --out "$work/summary.md" "$@" || status=$?
if [ ! -s "$work/samples.csv" ]; then
  echo "soak.sh: no samples written" >&2
  exit 1
fi

# One row per 5 s: the largest RSS, descriptors and threads of the bucket (a leak shows in the
# maxima as in the medians; a downsampled minimum would hide one).
awk -F, 'NR == 1 { print; next }
  { b = int($1 / 5) * 5
    if (b != cur) { if (NR > 2) print row; cur = b; rss = 0; fds = 0; thr = 0; red = 0 }
    if ($4 > rss) rss = $4; if ($5 > fds) fds = $5; if ($6 > thr) thr = $6; if ($7 > red) red = $7
    row = b "," $2 "," $3 "," rss "," fds "," thr "," red }
  END { print row }' "$work/samples.csv" > "$base.csv"
cp "$work/summary.md" "$base.md"

# Load start and end (first and last sample of the load phase) for the plot's markers.
read -r t0 t1 < <(awk -F, '$2 == "load" { if (!s) s = $1; e = $1 } END { print s + 0, e + 0 }' "$work/samples.csv")
gnuplot <<GP
set terminal pngcairo size 1200,800 font "sans,10"
set output "$base.png"
set datafile separator ","
set key top left
set lmargin 10
set rmargin 10
set multiplot layout 2,1 title "Lumen endurance soak, $date (shaded: load)"
set object 1 rect from $t0, graph 0 to $t1, graph 1 behind fc rgb "#eeeeee" fs solid noborder
set xlabel "seconds"
set ylabel "RSS (MiB)"
set yrange [0:*]
plot "$work/samples.csv" every ::1 using 1:(\$4/1024) with lines lw 2 title "Lumen RSS", \
     "" every ::1 using 1:(\$7/1024) with lines lw 1 title "redis-server RSS"
set ylabel "open descriptors"
set y2label "requests / s"
set y2tics
set ytics nomirror
set y2range [0:*]
prev = 0
plot "$work/samples.csv" every ::1 using 1:5 with lines lw 2 title "Lumen fds", \
     "" every ::1 using 1:(d = \$3 - prev, prev = \$3, d) axes x1y2 with lines lw 1 lc rgb "#999999" title "requests/s (right)"
unset multiplot
GP
echo "wrote $base.md, $base.csv, $base.png"
exit "$status"

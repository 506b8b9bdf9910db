"""The official OpenAI and Anthropic Python SDKs against a running Lumen (issue 23).

Run by tests/run.sh against a debug Lumen in front of lumen-sim, with API keys on, twice: once
with the simulator's Messages and Responses APIs off, so both go through Lumen's translation
(RESPONSES = translated), once with the backend set to forward both natively (RESPONSES =
native: lumen-sim keeps the responses, Lumen maps their ids). Every check asserts what the SDK
returned or raised; all checks run, then the script exits non-zero naming the failures.

    python3 official_clients.py http://127.0.0.1:PORT MODEL KEY OTHER_KEY [translated|native]
"""

import math
import sys
import warnings

import anthropic
import openai

base, model, key, other = sys.argv[1:5]
mode = sys.argv[5] if len(sys.argv) > 5 else "translated"
assert mode in ("translated", "native"), mode
native = mode == "native"
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (f": {detail}" if detail and not cond else ""))
    if not cond:
        failures.append(name)


def raises(name, kind, f):
    try:
        r = f()
    except kind:
        check(name, True)
        return
    except Exception as e:  # noqa: BLE001 - the wrong exception type is the failure
        check(name, False, f"raised {type(e).__name__}: {e}")
        return
    check(name, False, f"returned {r!r:.200}")


# ---- Anthropic: Messages -------------------------------------------------------------------
a = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)
m = a.messages.create(
    model=model, max_tokens=12, system="be brief", messages=[{"role": "user", "content": "hello"}]
)
check("messages.create: a message with text", m.type == "message" and m.content[0].type == "text" and m.content[0].text)
check("messages.create: usage", m.usage.input_tokens > 0 and m.usage.output_tokens == 12, m.usage)

with a.messages.stream(model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
check("messages.stream: text and final message", text and final.content[0].text == text, (text, final))
check("messages.stream: usage in the final message", final.usage.output_tokens == 8, final.usage)

events = [e.type for e in a.messages.create(model=model, max_tokens=4, stream=True, messages=[{"role": "user", "content": "hi"}])]
check("raw stream: event order", events[0] == "message_start" and events[-1] == "message_stop" and "message_delta" in events, events)

tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
m = a.messages.create(
    model=model,
    max_tokens=8,
    tools=tools,
    messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01ABC", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01ABC", "content": "sunny"}]},
    ],
)
check("messages.create: a tool_use / tool_result round trip", m.content[0].type == "text", m)
n = a.messages.count_tokens(model=model, messages=[{"role": "user", "content": "count these words"}], tools=tools)
check("messages.count_tokens", n.input_tokens > 0, n)
raises("Anthropic: unknown model is NotFoundError", anthropic.NotFoundError, lambda: a.messages.create(model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "x"}]))
raises("Anthropic: a server tool is BadRequestError", anthropic.BadRequestError, lambda: a.messages.create(model=model, max_tokens=4, tools=[{"type": "web_search_20250305", "name": "web_search"}], messages=[{"role": "user", "content": "x"}]))
bad = anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0, timeout=30)
raises("Anthropic: a wrong key is AuthenticationError", anthropic.AuthenticationError, lambda: bad.messages.create(model=model, max_tokens=4, messages=[{"role": "user", "content": "x"}]))

# ---- OpenAI: Responses (translated to chat by Lumen, or lumen-sim's own) -------------------
o = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)
r1 = o.responses.create(model=model, instructions="be brief", input="My name is Ada.")
check("responses.create: completed with output_text", r1.status == "completed" and r1.output_text, r1)
check("responses.create: usage", r1.usage.input_tokens > 0 and r1.usage.output_tokens > 0, r1.usage)
if native:
    # lumen-sim's answer, relayed as it sent it: it echoes no instructions (Lumen's would).
    check("responses.create: the engine's own response (native)", r1.id.startswith("resp_") and r1.instructions is None, r1)
else:
    check("responses.create: Lumen's response (instructions echoed)", r1.id.startswith("resp_") and r1.instructions == "be brief", r1)

events = list(o.responses.create(model=model, input="stream please", stream=True))
kinds = [e.type for e in events]
check("responses stream: created ... completed", kinds[0] == "response.created" and kinds[-1] == "response.completed" and "response.output_text.delta" in kinds, kinds)
check("responses stream: sequence_number 0, 1, 2, ...", [e.sequence_number for e in events] == list(range(len(events))), [e.sequence_number for e in events])
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
check("responses stream: the deltas make the completed text", deltas and events[-1].response.output_text == deltas, (deltas, events[-1].response.output_text))
with o.responses.stream(model=model, input="use the helper") as s:
    for _ in s:
        pass
    f = s.get_final_response()
check("responses.stream: final response", f.status == "completed" and f.output_text and f.usage.output_tokens > 0, f)

r2 = o.responses.create(model=model, input="What is my name?", previous_response_id=r1.id)
check("responses: previous_response_id continues", r2.previous_response_id == r1.id and r2.usage.input_tokens > r1.usage.input_tokens, (r1.usage, r2.usage))
got = o.responses.retrieve(r2.id)
check("responses.retrieve", got.id == r2.id and got.output_text == r2.output_text and got.usage.input_tokens == r2.usage.input_tokens, got)
items = o.responses.input_items.list(r2.id)
check("responses.input_items.list", len(items.data) == 1 and items.data[0].id and items.first_id == items.data[0].id and items.data[0].content[0].text == "What is my name?", items)
r3 = o.responses.create(model=model, input=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
if native:
    # lumen-sim keeps the items as sent (no ids) and does not page: one page of three.
    page = o.responses.input_items.list(r3.id)
    check("responses.input_items.list: the three items, as sent", [i.role for i in page.data] == ["user", "assistant", "user"] and not page.has_more, page)
else:
    paged = [i.id for i in o.responses.input_items.list(r3.id, limit=1, order="asc")]
    check("responses.input_items.list pages with its cursor (limit=1, auto-pagination)", len(paged) == 3 and len(set(paged)) == 3, paged)
other_client = openai.OpenAI(base_url=base + "/v1", api_key=other, max_retries=0, timeout=30)
raises("responses: another key cannot read it (NotFoundError)", openai.NotFoundError, lambda: other_client.responses.retrieve(r2.id))
raises("responses: another key cannot continue it (NotFoundError)", openai.NotFoundError, lambda: other_client.responses.create(model=model, input="x", previous_response_id=r2.id))
raises("responses: another key cannot delete it (NotFoundError)", openai.NotFoundError, lambda: other_client.responses.delete(r2.id))
check("responses: still there after another key's delete", o.responses.retrieve(r2.id).id == r2.id)
raises("responses.cancel: BadRequestError", openai.BadRequestError, lambda: o.responses.cancel(r2.id))
o.responses.delete(r1.id)
raises("responses.delete, then retrieve: NotFoundError", openai.NotFoundError, lambda: o.responses.retrieve(r1.id))
raises("responses.delete, then continue: NotFoundError", openai.NotFoundError, lambda: o.responses.create(model=model, input="x", previous_response_id=r1.id))
fn = [{"type": "function", "name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}, "strict": True}]
check("responses: a function tool", o.responses.create(model=model, input="Weather?", tools=fn).status == "completed")
# Codex's freeform apply_patch (a custom tool with a Lark grammar) and its client-run
# tool_search, as Codex 0.171 sends them for its own models; then a turn carrying their calls and
# outputs, as Codex sends the next request.
grammar = 'start: "*** Begin Patch" LF hunk+ "*** End Patch"\nhunk: /[^\\n]+/ LF\n%import common.LF'
custom = [{"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.", "format": {"type": "grammar", "syntax": "lark", "definition": grammar}}]
search = {"type": "tool_search", "execution": "client", "description": "Searches over deferred tools.", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"], "additionalProperties": False}}
rc = o.responses.create(model=model, input="Fix the typo in README.md", tools=custom + [search], tool_choice="auto")
check("responses: a custom tool (apply_patch, lark grammar) and tool_search accepted", rc.status == "completed" and rc.output_text, rc)
if not native:
    check("responses: the custom tool echoed", [(t.type, t.name, t.format.type, t.format.definition) for t in rc.tools[:1]] == [("custom", "apply_patch", "grammar", grammar)], rc.tools)
    check("responses: tool_search echoed", [(t.type, t.execution) for t in rc.tools[1:]] == [("tool_search", "client")], rc.tools)
patch = "*** Begin Patch\n*** Update File: README.md\n-teh\n+the\n*** End Patch"
rc2 = o.responses.create(
    model=model,
    tools=custom + [search],
    input=[
        {"role": "user", "content": "Fix the typo in README.md"},
        {"type": "tool_search_call", "call_id": "call_0", "execution": "client", "arguments": {"query": "git"}},
        {"type": "tool_search_output", "call_id": "call_0", "execution": "client", "tools": [{"type": "function", "name": "git_status", "description": "git status", "parameters": {"type": "object", "properties": {}}}]},
        {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": patch},
        {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Success. Updated README.md"},
    ],
)
check("responses: tool_search and custom_tool_call items, with their outputs, in input", rc2.status == "completed" and rc2.output_text and rc2.usage.input_tokens > rc.usage.input_tokens, (rc.usage, rc2.usage))
t = o.responses.input_tokens.count(model=model, input="How many tokens is this?")
check("responses.input_tokens.count", t.input_tokens > 0, t)
raises("OpenAI: unknown model is NotFoundError", openai.NotFoundError, lambda: o.responses.create(model="no-such-model", input="x"))
if native:
    # Forwarded as sent: the engine decides (lumen-sim ignores tools and background).
    check("native: web_search is the engine's to refuse (lumen-sim answers)", o.responses.create(model=model, input="x", tools=[{"type": "web_search"}]).status == "completed")
else:
    raises("OpenAI: web_search is BadRequestError", openai.BadRequestError, lambda: o.responses.create(model=model, input="x", tools=[{"type": "web_search"}]))
    raises("OpenAI: background is BadRequestError", openai.BadRequestError, lambda: o.responses.create(model=model, input="x", background=True))

# ---- OpenAI: audio (forwarded as the client's multipart form, to lumen-sim) -----------------
# lumen-sim's text is derived from the file's length; its JSON says what it received. The SDK
# marks audio.translations deprecated (a DeprecationWarning on each call); vLLM still serves it.
warnings.filterwarnings("ignore", message="deprecated", category=DeprecationWarning)
audio = bytes(range(256)) * 250  # 64,000 bytes: two seconds of 16 kHz 16-bit mono
tr = o.audio.transcriptions.create(model=model, file=("meeting.wav", audio, "audio/wav"), response_format="json")
check("audio.transcriptions.create (json): the text", tr.text == f"transcribed {len(audio)} bytes of audio", tr)
check("audio.transcriptions.create (json): duration usage", tr.usage.type == "duration" and tr.usage.seconds == math.ceil(len(audio) / 32000), tr.usage)
sim = (tr.model_extra or {}).get("sim", {})
check("audio.transcriptions.create (json): the engine got the model and the whole file", sim.get("model") == model and sim.get("file_bytes") == len(audio), sim)
text = o.audio.transcriptions.create(model=model, file=("meeting.wav", audio, "audio/wav"), response_format="text", language="en", temperature=0)
check("audio.transcriptions.create (text): plain text", isinstance(text, str) and text.strip() == f"transcribed {len(audio)} bytes of audio", repr(text))
tl = o.audio.translations.create(model=model, file=("rede.wav", audio[:1000], "audio/wav"))
check("audio.translations.create (json): the text", tl.text == "translated 1000 bytes of audio", tl)
tl = o.audio.translations.create(model=model, file=("rede.wav", audio[:1000], "audio/wav"), response_format="text")
check("audio.translations.create (text): plain text", isinstance(tl, str) and tl.strip() == "translated 1000 bytes of audio", repr(tl))
raises("audio: unknown model is NotFoundError", openai.NotFoundError, lambda: o.audio.transcriptions.create(model="no-such-model", file=("a.wav", audio[:100], "audio/wav")))
bad_o = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0, timeout=30)
raises("audio: a wrong key is AuthenticationError", openai.AuthenticationError, lambda: bad_o.audio.translations.create(model=model, file=("a.wav", audio[:100], "audio/wav")))

c = o.chat.completions.create(model=model, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
check("chat.completions.create still answers", c.choices[0].message.content, c)

if failures:
    print(f"{len(failures)} check(s) failed: {failures}")
    sys.exit(1)
print("official clients OK")

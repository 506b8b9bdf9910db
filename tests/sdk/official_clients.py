"""The official OpenAI and Anthropic Python SDKs against a running Lumen (issue 23).

Run by tests/run.sh against a debug Lumen in front of lumen-sim (no native Messages or
Responses API, so both go through Lumen's translation), with API keys on. Every check asserts
what the SDK returned or raised; the first failure exits non-zero with what went wrong.

    python3 official_clients.py http://127.0.0.1:PORT MODEL KEY OTHER_KEY
"""

import sys

import anthropic
import openai

base, model, key, other = sys.argv[1:5]
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

# ---- OpenAI: Responses ---------------------------------------------------------------------
o = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)
r1 = o.responses.create(model=model, instructions="be brief", input="My name is Ada.")
check("responses.create: completed with output_text", r1.status == "completed" and r1.output_text, r1)
check("responses.create: usage", r1.usage.input_tokens > 0 and r1.usage.output_tokens > 0, r1.usage)

kinds = [e.type for e in o.responses.create(model=model, input="stream please", stream=True)]
check("responses stream: created ... completed", kinds[0] == "response.created" and kinds[-1] == "response.completed" and "response.output_text.delta" in kinds, kinds)
with o.responses.stream(model=model, input="use the helper") as s:
    for _ in s:
        pass
    f = s.get_final_response()
check("responses.stream: final response", f.status == "completed" and f.output_text, f)

r2 = o.responses.create(model=model, input="What is my name?", previous_response_id=r1.id)
check("responses: previous_response_id continues", r2.previous_response_id == r1.id and r2.usage.input_tokens > r1.usage.input_tokens, (r1.usage, r2.usage))
check("responses.retrieve", o.responses.retrieve(r2.id).id == r2.id)
items = o.responses.input_items.list(r2.id)
check("responses.input_items.list", len(items.data) == 1 and items.data[0].id and items.first_id == items.data[0].id, items)
r3 = o.responses.create(model=model, input=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
paged = [i.id for i in o.responses.input_items.list(r3.id, limit=1, order="asc")]
check("responses.input_items.list pages with its cursor (limit=1, auto-pagination)", len(paged) == 3 and len(set(paged)) == 3, paged)
other_client = openai.OpenAI(base_url=base + "/v1", api_key=other, max_retries=0, timeout=30)
raises("responses: another key cannot read it (NotFoundError)", openai.NotFoundError, lambda: other_client.responses.retrieve(r2.id))
raises("responses: another key cannot continue it (NotFoundError)", openai.NotFoundError, lambda: other_client.responses.create(model=model, input="x", previous_response_id=r2.id))
raises("responses.cancel: BadRequestError", openai.BadRequestError, lambda: o.responses.cancel(r2.id))
o.responses.delete(r1.id)
raises("responses.delete, then retrieve: NotFoundError", openai.NotFoundError, lambda: o.responses.retrieve(r1.id))
fn = [{"type": "function", "name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}, "strict": True}]
check("responses: a function tool", o.responses.create(model=model, input="Weather?", tools=fn).status == "completed")
t = o.responses.input_tokens.count(model=model, input="How many tokens is this?")
check("responses.input_tokens.count", t.input_tokens > 0, t)
raises("OpenAI: unknown model is NotFoundError", openai.NotFoundError, lambda: o.responses.create(model="no-such-model", input="x"))
raises("OpenAI: web_search is BadRequestError", openai.BadRequestError, lambda: o.responses.create(model=model, input="x", tools=[{"type": "web_search"}]))
raises("OpenAI: background is BadRequestError", openai.BadRequestError, lambda: o.responses.create(model=model, input="x", background=True))
c = o.chat.completions.create(model=model, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
check("chat.completions.create still answers", c.choices[0].message.content, c)

if failures:
    print(f"{len(failures)} check(s) failed: {failures}")
    sys.exit(1)
print("official clients OK")

"""Teachers: the models that write lift-sys IRs and paraphrases, behind one small protocol.

    teacher = make_teacher("anthropic:claude-sonnet-4-5")          # key from $ANTHROPIC_API_KEY or a Secret block
    teacher = make_teacher("openai:http://127.0.0.1:8000/v1#qwen")  # vLLM, llama.cpp server, Ollama's /v1
    teacher = make_teacher("local:embedded")                        # a GGUF in llama.cpp (or local:/path/model.gguf)
    oracle = TemplateOracle(library, rows=prompt_rows)              # exact IRs from template slots (tasks/lift_sys/lift_oracle.py)
    reply = teacher.generate(messages, max_tokens=1024, temperature=0.0, json_schema=IR_SCHEMA)
    teacher.usage()   # {"requests", "retries", "input_tokens", "output_tokens", "cost_usd", "priced"}

One module per concern: ``protocol`` (reply, protocol, errors, request markers), ``retries`` (usage
and backoff), ``claude`` (Anthropic with prices), ``openai_compatible``, ``local_model`` (schema →
llama.cpp grammar) and ``registry`` (specs → backends). HTTP backends retry 429/5xx/connection
failures with exponential backoff and jitter (honouring ``retry-after``) and fail at once on any other
4xx. API keys never appear in names, reprs, errors or usage.
"""

from adapters.teachers.claude import ANTHROPIC_KEY_ENV, ANTHROPIC_PRICES, AnthropicTeacher, anthropic_key, anthropic_price
from adapters.teachers.local_model import LocalModelTeacher, grammar_schema, json_gbnf
from adapters.teachers.openai_compatible import OpenAICompatibleTeacher
from adapters.teachers.protocol import (
    REQUEST_CLOSE,
    REQUEST_OPEN,
    TASK_IR,
    TASK_PARAPHRASE,
    Teacher,
    TeacherError,
    TeacherReply,
    TeacherUnavailable,
    request_of,
    requested_count,
    task_of,
    wrap_request,
)
from adapters.teachers.registry import make_teacher, missing_credentials, parse_teacher_spec
from adapters.teachers.retries import RetryPolicy, Usage

__all__ = ["ANTHROPIC_KEY_ENV", "ANTHROPIC_PRICES", "REQUEST_CLOSE", "REQUEST_OPEN", "TASK_IR", "TASK_PARAPHRASE",
           "AnthropicTeacher", "LocalModelTeacher", "OpenAICompatibleTeacher", "RetryPolicy", "Teacher", "TeacherError",
           "TeacherReply", "TeacherUnavailable", "Usage", "anthropic_key", "anthropic_price", "grammar_schema", "json_gbnf",
           "make_teacher", "missing_credentials", "parse_teacher_spec", "request_of", "requested_count", "task_of",
           "wrap_request"]

"""An OpenAI-compatible HTTP endpoint over agentd's model (docs/openai.md).

http: the little HTTP/1.1 it needs; openai: the API's requests and answers in
agentd's terms; app: routes, the key, streaming, over a backend (an agent's
Runtime.ThinkStream, or an owner's Model.Chat for `agentctl serve`).
"""

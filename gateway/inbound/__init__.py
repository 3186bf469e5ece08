"""Inbound APIs: the request shapes clients send, read and validated before anything else runs.

openai.py  chat completions and embeddings bodies (OpenAI's shape, also the gateway's internal
           chat form), and the plain text of a message
body.py    the HTTP body (bounded by `server.max_body_bytes`) and the request's headers
"""

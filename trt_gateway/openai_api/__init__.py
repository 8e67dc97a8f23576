"""The OpenAI-compatible HTTP API, beside gRPC in the same process: `protocol` (JSON bodies -> requests),
`responses` (deltas -> JSON and server-sent events), `routes` (the Starlette app), `server` (uvicorn on the
gateway's loop). docs/openai.md says what is supported."""

"""Request handlers, one module per area; each reads its input, calls a service, renders."""

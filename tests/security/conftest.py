"""Fixtures of the security suite: hostile tenants against real processes (the embedded stack, the API, the
runtime). Each test module owns one room: the API's validation, the gateway, the local provider, the runtime."""

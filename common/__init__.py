"""What the control plane and the worker both stand on: settings, the database (ORM models, engines, sessions,
encryption at rest), the hardware catalog, the tenant-input rules (env policy, redaction), the internal service token
and the reconcile hand-off.

Dependencies run one way: `controlplane` and `worker` import `common`; `common` imports neither, nor `runtime`, so
either side can be installed, imported and tested without the other. Nothing here is imported on `import common`.
"""

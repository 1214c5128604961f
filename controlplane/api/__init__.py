"""HTTP layer: thin routers over `controlplane.services`, dependencies, and the one error-to-HTTP mapping."""

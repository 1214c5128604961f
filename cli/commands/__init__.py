"""The CLI's verbs, one module per family; importing a module registers its commands on `cli.app.app`."""

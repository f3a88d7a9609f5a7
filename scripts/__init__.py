"""Tools behind the Makefile targets: configuration, generation, launch, dashboards."""

"""Optional integrations of TST with other libraries; each submodule imports its library, this package imports nothing."""

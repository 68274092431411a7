"""The `afterword` command line."""

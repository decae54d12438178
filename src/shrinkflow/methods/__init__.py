"""Built-in compression methods, one file per method, registered through entry points like any plugin."""

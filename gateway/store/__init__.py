"""What the gateway keeps: functions, versions, aliases, layers, code, in SQLite and the code store."""

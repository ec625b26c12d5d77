"""The one way out for every report: outlet (symbolize, guarded, then a
report file or the sinks), deliver (redact, fingerprint, storm, sinks,
spool)."""

"""Policy: the gate chain, firearms, credentials and the audit trail."""

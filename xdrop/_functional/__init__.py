"""The public functions: dropout, its family (channel, alpha, drop path) and attention."""

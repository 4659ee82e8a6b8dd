"""verify's checks of one backend, its table and report."""

"""The backend registry that the tests, verify, bench and the noxfile read."""

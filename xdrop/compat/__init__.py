"""Drop-in interfaces for code written against other dropout APIs."""

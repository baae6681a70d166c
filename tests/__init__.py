"""daehwa test suite (a package so that tests and bench can import tests.fakes)."""

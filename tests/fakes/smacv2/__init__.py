"""Fake SMACv2 for hymarl's tests (see tests/fakes/README.md). Not the real package."""

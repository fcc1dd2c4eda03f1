"""Helpers shared by the test suite (real servers started on free loopback ports)."""

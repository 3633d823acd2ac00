"""The test kit for plugin authors: reference implementations to test a backend against.

Import the pieces you need from their modules (for example
:class:`mlops_core.testing.reference_registry.InMemoryRegistry`, the reference
model a registry backend is compared with in conformance tests). This package
imports nothing itself, so it costs nothing unless a test uses it.
"""

"""Versioned SQL migrations and the one command that applies them.

Used by the sandbox, the tests, and (in AWS) a deploy-time custom resource.
"""

"""Helpers the tests share: databases, backfill fixtures' data, requirements that fail in CI.

Tests import from here (`from helpers.database import clone_database`), never from conftest.py
(which holds only fixtures and hooks) or from another test file.
"""

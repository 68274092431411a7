"""Test doubles for the services Afterword talks to."""

"""Deployment targets: each module registers one Target and its Runner."""

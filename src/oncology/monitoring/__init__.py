"""Monitoring: the release's coverage and KPIs in the store, as files and as flat tables for reporting tools."""

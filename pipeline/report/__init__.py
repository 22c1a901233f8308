"""Run reports: report.json (the contract), report.md, and the console table."""

"""Run reports: report.json (the contract), report.md, report.html (with plots), and the console table."""

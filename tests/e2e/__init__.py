"""End-to-end: `nimbus up` runs the whole system; tests drive it as a user would."""

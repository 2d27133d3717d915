"""What can be done to a run, as data: edge knockouts (and, as they come, other interventions)."""

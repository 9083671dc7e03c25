"""Business rules. Web views, API views, management commands and billing verbs all call
these functions; none holds logic of its own (DESIGN.md, "Conventions")."""

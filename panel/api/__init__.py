"""HTTP APIs built with Django REST framework: thin views over panel.services."""

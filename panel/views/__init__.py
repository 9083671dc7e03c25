"""The browser panel: thin views over the services (writes) and the access door (reads).

Views catch :class:`~panel.services.errors.ServiceError` and show its message; a miss or a
refusal from the access door becomes the readable 404 or 403 page. No business rule lives
here.
"""

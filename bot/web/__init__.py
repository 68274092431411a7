"""The web app: API, helpdesk hooks, dashboard, logins, pages, the HTTP server."""

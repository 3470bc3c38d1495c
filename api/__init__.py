"""The Litestar app: REST API, public tracking endpoints, pages and portals."""

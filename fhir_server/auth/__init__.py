"""SMART App Launch 2.2: the authorization server (OAuth 2 endpoints) and the token checks
the FHIR resource server relies on.

Entry points for the application: `routes.build_auth_router`, `routes.build_well_known_router`,
`indexes.ensure_auth_indexes`, `settings.AuthSettings` and `interceptors.smart.SmartInterceptor`.
"""

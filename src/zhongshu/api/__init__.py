"""HTTP routers: parse, authorize, call a service, shape the reply. No logic lives here."""

"""Scheduling (IHE ITI Scheduling shapes on R4): `$find` proposes Appointments from free Slots,
`$hold`, `$book`, `$cancel` and `$reschedule` change an Appointment and its Slots together in
one unit of the write pipeline (never double-booking), `$bulk-publish` publishes Slots as
SMART Scheduling Links. The Appointment state machine (`statuses`) is enforced on every write
by `interceptors.scheduling_rules`. HTTP adapters: `fhir_server.api.scheduling`."""

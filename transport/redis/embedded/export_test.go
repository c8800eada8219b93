package embedded

// BlockedClients is how many clients are in a blocking command now, for
// the tests of package embedded_test.
func (e *Server) BlockedClients() int { return e.blockedClients() }

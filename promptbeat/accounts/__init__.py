"""People's accounts: passwords, roles, disabling, and the first admin's sign-in file."""

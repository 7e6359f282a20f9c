"""The steps of a deploy over a target (deploy: build, plan, push, activate, verify, roll back;
generations, rollback) and promote's (promote: the rehearsal guard, then the same steps over a server)."""

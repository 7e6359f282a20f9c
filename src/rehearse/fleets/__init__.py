"""Above one machine: several at once on one LAN (fleet) and a deploy on every save (watch)."""

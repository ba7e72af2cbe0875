"""sync_server: filled in by later issues (see DESIGN.md section 2)."""

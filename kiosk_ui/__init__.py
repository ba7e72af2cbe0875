"""kiosk_ui: filled in by later issues (see DESIGN.md section 2)."""

"""What the API and the console share as one Litestar app: its state, and the request's clock and caller."""

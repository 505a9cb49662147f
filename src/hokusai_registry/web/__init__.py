"""The gateway's own browser pages: sign-in, sign-out and key administration."""

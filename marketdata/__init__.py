"""marketdata: complete, replayable minute bars from ten venues."""

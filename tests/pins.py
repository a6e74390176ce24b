"""Every PIN the test suite uses. The session-end check greps everything the run logged for each
of them (as a whole number, not as part of a longer one) and fails the run if one appears."""

DEMO_PIN = "5961"  # every demo patron's PIN
NEW_PIN = "4826"
OTHER_PIN = "3907"
WRONG_PIN = "7350"
WRONG_PIN_2 = "8142"

ALL = (DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN, WRONG_PIN_2)

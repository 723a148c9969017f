import os
import time


class CustomError(Exception):
    pass


def handler(event, context):
    action = event.get("action")
    if action == "raise":
        raise CustomError("something went wrong")
    if action == "exit":
        print("errors: about to exit")
        os._exit(3)
    if action == "sleep":
        print("errors: about to sleep")
        time.sleep(event.get("seconds", 10))
    if action == "big":
        return "x" * (7 * 1024 * 1024)
    if action == "log":
        for i in range(event.get("lines", 10)):
            print(f"line {i}")
    return {"ok": True}

raise RuntimeError("init exploded")
def handler(e, c):
    return 1

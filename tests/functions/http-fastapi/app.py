"""A FastAPI app behind Mangum (payload 2.0: function URLs and HttpApi)."""
from fastapi import FastAPI, Request, Response
from mangum import Mangum

app = FastAPI()


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return Response(content=body[::-1], media_type="application/octet-stream")


@app.get("/cookie")
def cookie(request: Request, response: Response):
    response.set_cookie("seen", request.cookies.get("visit", "none"))
    return {"visit": request.cookies.get("visit")}


@app.get("/fail")
def fail():
    raise ValueError("fastapi route failed")      # FastAPI answers 500 itself


handler = Mangum(app, lifespan="off")

"""Benchmark function `web`: an API Gateway (REST, aws-proxy) handler routed by
aws-lambda-powertools' APIGatewayRestResolver, with the JSON body validated into a
pydantic model (the resolver's data validation)."""
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel, Field

app = APIGatewayRestResolver(enable_validation=True)


class Order(BaseModel):
    item: str = Field(min_length=1)
    quantity: int = Field(gt=0, le=1000)
    price_cents: int = Field(ge=0)


@app.post("/orders")
def create_order(order: Order) -> dict:
    return {"item": order.item, "total_cents": order.quantity * order.price_cents}


@app.get("/health")
def health() -> dict:
    return {"ok": True}


def handler(event, context):
    return app.resolve(event, context)

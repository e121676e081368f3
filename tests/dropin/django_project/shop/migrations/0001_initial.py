import django.db.models.deletion
from django.db import migrations, models


def accounts(apps, schema_editor):
    Account = apps.get_model("shop", "Account")
    Counter = apps.get_model("shop", "Counter")
    Account.objects.bulk_create([Account(name=f"a{i}", balance=100) for i in range(20)])
    Counter.objects.create(name="transfers", value=0)


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Account",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=20, unique=True)),
                ("balance", models.IntegerField()),
            ],
        ),
        migrations.CreateModel(
            name="Counter",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=40, unique=True)),
                ("value", models.IntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="Transfer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("amount", models.IntegerField()),
                (
                    "source",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="sent",
                        to="shop.account",
                    ),
                ),
                (
                    "target",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="received",
                        to="shop.account",
                    ),
                ),
            ],
        ),
        migrations.RunPython(accounts),
    ]
